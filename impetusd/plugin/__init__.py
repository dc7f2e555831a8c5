"""The plugin host: hook specs, the plugin manager, the typed registries hooks
fill, the engine contract a backend implements (and the messages it gets), and
the daemon's own built-in plugins. Plugin authors import from
``impetusd.plugin_api`` only."""
