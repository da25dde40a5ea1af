"""The data-plane daemon (`alai node start`) and the cloud worker (`alai worker`):
register with the control plane, heartbeat, claim runs over HTTPS, execute them,
stream their events back. Never touches the database; never imports alai.server."""
