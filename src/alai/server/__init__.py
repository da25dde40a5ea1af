"""The control plane: one ASGI app (`alai.server.app.create_app`) made of modules.

Needs the `server` extra. Nothing outside `alai.server` may import this package.
"""
