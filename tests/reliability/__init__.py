"""Fault injection: workers SIGKILLed mid-sync, Redis and Dovecot restarted, the Hub failing, sources
throttling and expiring credentials. Reduced in ``make test``; full with KMRL_RELIABILITY_FULL=1."""
