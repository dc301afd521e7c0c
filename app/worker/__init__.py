"""The stream worker: Faust agents (entry points) over pure services and I/O adapters."""
