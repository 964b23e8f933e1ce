from gateway_fakes import gateway

__all__ = ["gateway"]
