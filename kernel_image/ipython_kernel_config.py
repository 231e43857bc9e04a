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
# Nothing in the workspace is imported while the kernel starts (it runs with `python -P`, and IPython does
# not add the working directory either): a module planted in /data cannot run at the next start. Once
# started, /data comes last on the path: the user's own modules import, but never shadow installed ones.
c.InteractiveShellApp.ignore_cwd = True
_WORKSPACE_LAST_ON_PATH = "import sys as _sys; _sys.path.append('/data'); del _sys"
c.InteractiveShellApp.exec_lines = [_KEEP_KERNEL_ON_EXIT, _WORKSPACE_LAST_ON_PATH]
