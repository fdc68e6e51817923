"""The Open Inference Protocol over HTTP: the FastAPI app (:mod:`.app`), the inference fast path in front
of it (:mod:`.fastpath`), the body codec (:mod:`.codec`, :mod:`.jsonload`), the limits on what a client
may send (:mod:`.limits`), the one error body (:mod:`.asgi`) and the OpenAPI-only schemas (:mod:`.schemas`).

Nothing is imported here, so importing one module does not pull in FastAPI.
"""
