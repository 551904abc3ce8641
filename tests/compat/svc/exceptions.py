"""svc's own exceptions (like os-vif's NetworkInterfaceNotFound)."""


class InterfaceNotFound(Exception):
    def __init__(self, device: str) -> None:
        super().__init__(device)
        self.device = device

    def __str__(self) -> str:
        return f"interface {self.device} not found"
