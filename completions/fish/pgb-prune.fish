complete -c pgb-prune -l repo -d 'Prune the artifacts of this repository (their .pgb.json sidecars) instead of reading records on stdin; every record must sit where its sidecar is; the records\' repo is DIR (a repository moved or copied elsewhere is read where it lies). A directory, ssh://[user@]host[:port]/path or s3://bucket/prefix' -r -F
complete -c pgb-prune -l keep-last -d 'Keep the N newest artifacts (N or `unlimited`)' -r
complete -c pgb-prune -l keep-hourly -d 'Keep the newest artifact of each of the N most recent hours that have artifacts' -r
complete -c pgb-prune -l keep-daily -d 'Keep the newest artifact of each of the N most recent days that have artifacts' -r
complete -c pgb-prune -l keep-weekly -d 'Keep the newest artifact of each of the N most recent ISO weeks (Monday to Sunday) that have artifacts' -r
complete -c pgb-prune -l keep-monthly -d 'Keep the newest artifact of each of the N most recent months that have artifacts' -r
complete -c pgb-prune -l keep-yearly -d 'Keep the newest artifact of each of the N most recent years that have artifacts' -r
complete -c pgb-prune -l keep-within -d 'Keep every artifact made within DURATION of the group\'s newest artifact. restic\'s syntax: NUMBER UNIT pairs, units y (years), m (MONTHS), d (days), h (hours): 1y6m, 30d, 2d12h' -r
complete -c pgb-prune -l lock-wait -d 'Wait up to this many seconds for the repository lock held by another run (default: exit 3 at once)' -r
complete -c pgb-prune -l wal-archive -d 'Expire this WAL archive: remove, per timeline, the segments, .partial and .backup files older than the start segment of the oldest kept physical backup on that timeline or its ancestors (following .history files; the oldest kept physical backup at all for other timelines). .history files are always kept. Nothing is removed when no physical backup is kept. The plan lists the ranges as `wal-expiry` records. With stdin input, the input must hold every physical backup of the cluster. A directory, ssh://... or s3://...' -r -F
complete -c pgb-prune -l now -d 'Take this as the current time (RFC 3339, e.g. 2026-11-21T03:00:00Z), for tests and for replaying a plan' -r
complete -c pgb-prune -l clock-tolerance -d 'How many seconds in the future an artifact or verification may be dated before the clock is taken to have gone backwards' -r
complete -c pgb-prune -l require-verified -d 'Count only artifacts that passed verification (pgb-verify)'
complete -c pgb-prune -l apply -d 'Delete what the plan says, under the repository lock (without it, only the plan is printed)'
complete -c pgb-prune -l copies -d 'With --apply, also delete the recorded copies (`copies`, written by pgb-ship) of each deleted artifact, on local, SSH and S3 destinations'
complete -c pgb-prune -l json -d 'Write pgb.v1 records (JSON lines) even when stdout is a terminal. Without it a terminal gets one short line per record (sizes in binary units, times as ages, the outcome); a pipe or a file always gets the records'
complete -c pgb-prune -l help -d 'Print help'
complete -c pgb-prune -s V -l version -d 'Print version'
