"""Running impetusd as a login service: launchd on macOS, systemd --user on Linux."""
