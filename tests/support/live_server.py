"""The service started by the ``web_server`` fixture (classifier_site.serve)."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()
