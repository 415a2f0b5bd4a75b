"""Transaction logs of the storage groups: every committed change of a mailbox database is
also appended, fsynced, to its log before the caller is answered; replaying the log onto a
restored copy brings the database back to its last acknowledged change.

* :mod:`.wal` reads the committed WAL frames a commit appended;
* :mod:`.records` frames them as log records in segment files;
* :mod:`.log` appends and reads one database's log under its lock;
* :mod:`.journal` is the group-commit writer's side (count, copy, fsync);
* :mod:`.manifest` is the storage group's record of its databases (never re-create a lost
  one empty);
* :mod:`.replay` rolls a database file forward.
"""
