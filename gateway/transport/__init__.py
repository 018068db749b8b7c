"""Transports: serial request/response and CAN; bytes in and out, no protocol knowledge."""
