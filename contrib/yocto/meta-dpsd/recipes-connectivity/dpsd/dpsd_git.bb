# SPDX-License-Identifier: MIT
# dpsd_git.bb: dpsd, the Azure IoT Hub Device Provisioning Service agent, with dpsctl, dps-sim and libdps
SUMMARY = "Azure IoT Hub Device Provisioning Service agent"
DESCRIPTION = "dpsd registers the device with the Azure IoT Hub Device \
Provisioning Service over MQTT/TLS (symmetric key or X.509), caches the \
assignment, and exports it on the system bus (org.dpsd.Provisioning1). \
dpsctl queries it; dps-sim is a local DPS simulator for tests."
HOMEPAGE = "https://github.com/dpsd/dpsd"
SECTION = "net"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=43707dfeae914b2fc0c55add19771da1"

# A fork or a local mirror: set DPSD_GIT_URI (and SRCREV) in local.conf or
# a bbappend.
DPSD_GIT_URI ??= "git://github.com/dpsd/dpsd.git"
SRC_URI = "${DPSD_GIT_URI};protocol=https;branch=main"
SRCREV = "7aff265137f80c1eb192c958fcd118a3247e2e9b"
PV = "0.1.0+git"
S = "${WORKDIR}/git"

inherit meson pkgconfig systemd useradd features_check

REQUIRED_DISTRO_FEATURES = "systemd"

DEPENDS = "mosquitto openssl json-c systemd libconfig wslay"

PACKAGECONFIG ??= "sim man"
PACKAGECONFIG[sim] = "-Dsim=true,-Dsim=false"
PACKAGECONFIG[man] = "-Dman=enabled,-Dman=disabled,scdoc-native"

# Directories as this distro lays them out, not as the build host's
# systemd.pc and dbus-1.pc would say.
EXTRA_OEMESON = " \
    -Dtests=false \
    -Dfuzz=false \
    -Duser=dpsd \
    -Dgroup=dpsd \
    -Dsystemdsystemunitdir=${systemd_system_unitdir} \
    -Dsysusersdir=${nonarch_libdir}/sysusers.d \
    -Dtmpfilesdir=${nonarch_libdir}/tmpfiles.d \
    -Ddbuspolicydir=${datadir}/dbus-1/system.d \
    -Ddbussystemservicedir=${datadir}/dbus-1/system-services \
    -Ddbusinterfacesdir=${datadir}/dbus-1/interfaces \
"

# dpsd runs as the system user dpsd; the group dpsd may call Reprovision().
# (dpsd.sysusers creates the same on first boot; both agree.)
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system dpsd"
USERADD_PARAM:${PN} = "--system --gid dpsd --home-dir /var/lib/dpsd --no-create-home --shell /sbin/nologin dpsd"

# Packages as users expect them: the daemon, the CLI, the simulator, the
# library and its development files. Listed before the defaults, so their
# files are claimed first.
PACKAGES =+ "dpsctl dps-sim libdps libdps-dev"

FILES:dpsctl = "${bindir}/dpsctl ${mandir}/man1/dpsctl.1*"
FILES:dps-sim = "${bindir}/dps-sim ${bindir}/dps-sim-certs ${mandir}/man1/dps-sim.1*"
FILES:libdps = "${libdir}/libdps${SOLIBS}"
FILES:libdps-dev = "${includedir}/dps ${libdir}/libdps${SOLIBSDEV} ${libdir}/pkgconfig/libdps.pc"
FILES:${PN} += " \
    ${systemd_system_unitdir}/dpsd.service \
    ${systemd_system_unitdir}/dpsd-wait-provisioned.service \
    ${systemd_system_unitdir}/dps-provisioned.target \
    ${nonarch_libdir}/sysusers.d/dpsd.conf \
    ${nonarch_libdir}/tmpfiles.d/dpsd.conf \
    ${datadir}/dbus-1/system.d/org.dpsd.Provisioning1.conf \
    ${datadir}/dbus-1/system-services/org.dpsd.Provisioning1.service \
    ${datadir}/dbus-1/interfaces/org.dpsd.Provisioning1.xml \
    ${datadir}/dpsd \
"

# The edited configuration survives upgrades.
CONFFILES:${PN} = "${sysconfdir}/dps.conf"

SYSTEMD_PACKAGES = "${PN}"
SYSTEMD_SERVICE:${PN} = "dpsd.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# dpsd-wait-provisioned.service runs dpsctl; dpsd.service needs the bus.
RDEPENDS:${PN} = "dpsctl dbus"
RRECOMMENDS:${PN} = "ca-certificates"
# dps-sim-certs is a bash script around the openssl command line.
RDEPENDS:dps-sim = "bash openssl-bin"
RDEPENDS:libdps-dev = "libdps"
