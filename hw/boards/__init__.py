"""Board support: the UART bridge gateware and the board tops that `obcore synth` builds."""

__all__ = []
