"""Notification service. Invitations, reminders and outcome notices by e-mail and webhook."""
