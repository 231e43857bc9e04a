# System-wide IPython kernel configuration (/etc/ipython/ipython_kernel_config.py in the image).
c = get_config()  # noqa: F821

# Inline figures as PNG: every client can display it.
c.InlineBackend.figure_formats = {"png"}
