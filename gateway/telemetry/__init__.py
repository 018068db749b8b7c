"""Telemetry: what the gateway tells the world besides the inverter, none of it able to delay the control loop.

* :mod:`~gateway.telemetry.sd_notify`: READY/WATCHDOG/STATUS/STOPPING to systemd, pinged from the loop itself;
* :mod:`~gateway.telemetry.fault`: a hook that hangs the control loop on purpose (watchdog tests);
* :mod:`~gateway.telemetry.status_doc`: a :class:`~gateway.runtime.Snapshot` as one JSON document;
* :mod:`~gateway.telemetry.http_status`: that document and Prometheus metrics over HTTP;
* :mod:`~gateway.telemetry.ha_discovery` and :mod:`~gateway.telemetry.mqtt`: MQTT with Home Assistant discovery;
* :mod:`~gateway.telemetry.relay`: the optional fail-safe relay on a GPIO line;
* :mod:`~gateway.telemetry.service`: all of the above assembled from the config, with the hooks the runtime calls.

Everything here reads snapshots; nothing here is read by the control logic.
"""
