"""The toolchains: building a ``source`` project into a Wasm artifact, cached by content hash.

componentize-py builds Python components (``componentize``), clang with wasi-libc builds C
command modules (``clang``); both hash the project the same way (``projects``). The WIT doc
comments every builder drops are carried into the artifact and read back at load (``wit_docs``).
"""

from workers.toolchains.clang import build_c_command
from workers.toolchains.componentize import build_component
from workers.toolchains.errors import BuildError

__all__ = ["BuildError", "build_c_command", "build_component"]
