"""Build the decoder extension against libpcap (found with pkg-config) and numpy."""
import os
import shlex
import subprocess
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args, "libpcap"], check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return shlex.split(out.stdout)


def libpcap_flags():
    cflags, libs = pkg_config("--cflags"), pkg_config("--libs")
    if cflags is None or libs is None:
        if os.path.exists("/usr/include/pcap/pcap.h"):
            return [], ["-lpcap"]
        sys.exit(
            "error: libpcap development files not found (pkg-config libpcap failed).\n"
            "On Debian or Ubuntu: apt-get install libpcap-dev"
        )
    return cflags, libs


cflags, libs = libpcap_flags()
extra_compile = ["-O3"] + cflags
extra_link = list(libs)
directives = {"language_level": 3}
# FASTFLOW_DEBUG_CYTHON=1 turns bounds checking back on (and keeps assertions) for debugging
if os.environ.get("FASTFLOW_DEBUG_CYTHON"):
    directives.update(boundscheck=True, wraparound=True, initializedcheck=True)
    extra_compile = ["-O1", "-g"] + cflags
# FASTFLOW_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer (gcc or clang; run with the
# compiler's ASan runtime in LD_PRELOAD). FASTFLOW_SANITIZE=fuzz also adds libFuzzer's coverage counters and
# makes UB fatal, for the atheris harness (clang only; fuzz/build_sanitized.sh builds it in a separate folder)
sanitize = os.environ.get("FASTFLOW_SANITIZE")
if sanitize:
    san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    if sanitize == "fuzz":
        # -O1: ASan's reports keep their line numbers; the hot loops still inline
        san = ["-fsanitize=address,undefined,fuzzer-no-link", "-fno-sanitize-recover=undefined",
               "-fno-omit-frame-pointer", "-g", "-O1"]
    extra_compile += san
    extra_link += san


def extension(name: str, pcap: bool = False, numpy_headers: bool = True) -> Extension:
    """fastflow.NAME from ext/NAME.pyx. Only the decoder links libpcap (its BPF filters); numpy_headers for
    the modules that cimport numpy."""
    return Extension(
        f"fastflow.{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext", numpy.get_include()] if numpy_headers else ["ext"],
        extra_compile_args=extra_compile if pcap else [a for a in extra_compile if a not in cflags],
        extra_link_args=extra_link if pcap else [a for a in extra_link if a not in libs],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")] if numpy_headers else [],
    )


extensions = [extension("_decode", pcap=True), extension("_tcpstate"), extension("_tcpflows"), extension("_dgram"),
              extension("_sha1", numpy_headers=False), extension("_address_text", numpy_headers=False)]


class ParallelBuildExt(build_ext):
    """The C compiles on every core unless --parallel says otherwise: pip's build (scripts/setup.sh) gives no
    way to ask, and _tcpflows.c alone is most of a serial build."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1


cores = os.cpu_count() or 1
setup(ext_modules=cythonize(extensions, compiler_directives=directives, include_path=["ext"],
                            nthreads=cores if cores > 1 else 0),
      cmdclass={"build_ext": ParallelBuildExt})
