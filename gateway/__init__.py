"""bms-gateway: reads a JK BMS, derives safe limits and speaks an inverter's battery protocol."""

__version__ = "0.1.0"
