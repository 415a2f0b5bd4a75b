"""Layer 3: the messaging server (recipient directory, mail store, delivery, SMTP,
IMAP4, POP3). It plugs into the cluster only through resource types; the
cluster layer never imports it."""
