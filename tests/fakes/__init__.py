"""Test doubles that speak the real protocols (D-Bus services on a private dbus-daemon)."""
