"
SIGTERM: draining