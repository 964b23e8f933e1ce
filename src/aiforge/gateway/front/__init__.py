"""The gateway's HTTP/1.1 front: the inference routes served without the ASGI stack
(:mod:`aiforge.gateway.front.protocol`), everything else handed to uvicorn."""
