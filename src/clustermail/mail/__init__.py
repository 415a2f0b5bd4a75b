"""Layer 3: the messaging server (mail store, delivery, SMTP, IMAP4, POP3). Imports coord and
cluster only through resource types; never imported by them."""
