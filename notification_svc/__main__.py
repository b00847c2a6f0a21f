"""Run the notification service: `python -m notification_svc`."""

from mppo.platform.runtime import run_service
from notification_svc.bootstrap import SPEC
from notification_svc.config import load_config

if __name__ == "__main__":
    run_service(SPEC, load_config)
