# SPDX-License-Identifier: MIT
# wslay_1.1.0.bb: wslay, the WebSocket framing library libdps uses for MQTT over WebSocket
SUMMARY = "The WebSocket library in C"
DESCRIPTION = "wslay implements the WebSocket protocol (RFC 6455) framing as \
an event-based C library, without any network I/O of its own."
HOMEPAGE = "https://tatsuhiro-t.github.io/wslay/"
SECTION = "libs"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://COPYING;md5=2e433b9147076dec0a1b88f9f5ee7b53"

SRC_URI = "https://github.com/tatsuhiro-t/wslay/releases/download/release-${PV}/wslay-${PV}.tar.xz"
SRC_URI[sha256sum] = "0d82d247b847cc08e798ee2f28ee22b331d54e5900b3e1bef184945770185e17"

inherit autotools pkgconfig

# The documentation (Sphinx) and the tests (CUnit) are built only when
# configure finds those tools, which the build's sysroot does not provide.
