"""Settings schema and embedded defaults."""

from config.settings import Output, Peer, Settings, load_settings

__all__ = ["Output", "Peer", "Settings", "load_settings"]
