"""Run the payment service: `python -m payment_svc`."""

from mppo.platform.runtime import run_service
from payment_svc.bootstrap import SPEC
from payment_svc.settings import load_config

if __name__ == "__main__":
    run_service(SPEC, load_config)
