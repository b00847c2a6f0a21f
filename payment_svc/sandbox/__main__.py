"""Run the sandbox provider: ``python -m payment_svc.sandbox``."""

from payment_svc.sandbox.app import main

if __name__ == "__main__":
    main()
