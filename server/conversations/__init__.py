"""Two-way conversations (DESIGN §8): inbound messages, threading, the shared inbox."""
