# System-wide IPython kernel configuration (/etc/ipython/ipython_kernel_config.py in the image).
c = get_config()  # noqa: F821

# Inline figures as PNG: every client can display it.
c.InlineBackend.figure_formats = {"png"}

# The kernel is shared (API clients, WebSockets, `workbench attach`): `exit()`/`quit()` end the caller's
# front end only and never the kernel, which Workbench restarts or stops itself.
_KEEP_KERNEL_ON_EXIT = """
from ipykernel.zmqshell import ZMQExitAutocall as _ZMQExitAutocall


class _KeepKernelExit(_ZMQExitAutocall):
    def __call__(self, keep_kernel=True):
        super().__call__(keep_kernel=keep_kernel)


_shell = get_ipython()
_shell.exiter = _KeepKernelExit(_shell)
for _name in ("exit", "quit"):
    _shell.user_ns[_name] = _shell.user_ns_hidden[_name] = _shell.exiter
del _ZMQExitAutocall, _KeepKernelExit, _shell, _name
"""
c.InteractiveShellApp.exec_lines = [_KEEP_KERNEL_ON_EXIT]
