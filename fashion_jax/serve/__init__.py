"""The local web page of `fashion-jax serve`: the model behind one batching worker thread
(service), the Starlette app and its upload limits (app), and the page itself (web/).
Starlette and uvicorn are the `serve` extra, imported only here.

Imports: everything below it, up to viz/.
"""
