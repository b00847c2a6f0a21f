"""Local stand-ins for PayPal and Razorpay: their REST APIs as our adapters call them, hosted
pages a payer approves on, and webhooks signed the providers' way (for tests and dev only)."""
