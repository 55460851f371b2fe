"""The desktop app (PyQt6): small widgets and panels that display the supervisor's state and send it commands; workers on threads talk to widgets only through signals."""
