"""`make bench`: performance figures of bms-gateway on the real code paths (never imported by the service)."""
