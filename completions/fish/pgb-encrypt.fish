complete -c pgb-encrypt -s r -l recipient -d 'Encrypt to this recipient: an age public key (age1...) or an SSH public key line (repeatable)' -r
complete -c pgb-encrypt -s R -l recipients-file -d 'Encrypt to the recipients listed in this file, one per line, `#` comments allowed; a file without any recipient is refused (repeatable)' -r -F
complete -c pgb-encrypt -s i -l identity -d 'Decrypt with the identities in this file: age identities (AGE-SECRET-KEY-1...) or an unencrypted OpenSSH private key; refused when readable by group or others or owned by another user (repeatable)' -r -F
complete -c pgb-encrypt -l repo -d 'Act on the artifacts of this repository (their .pgb.json sidecars) instead of reading records on stdin; the records\' repo is DIR (a repository moved or copied elsewhere is read where it lies)' -r -F
complete -c pgb-encrypt -l file -d 'Encrypt (or with -d decrypt) this one file instead of artifacts, like the age command; `-` reads stdin' -r -F
complete -c pgb-encrypt -s o -l output -d 'With --file: write here, atomically (temp name, fsync, rename; an existing file is never replaced); `-` writes to stdout [default: IN.age when encrypting, IN without .age when decrypting]' -r -F
complete -c pgb-encrypt -s d -l decrypt -d 'Decrypt instead of encrypt'
complete -c pgb-encrypt -l remove-plaintext -d 'After an artifact\'s ciphertext is fsynced and its checksums are recorded in its sidecar, delete its plaintext files (and, for a single-file artifact, the plaintext\'s sidecar). For an artifact already encrypted, plaintext left beside it is deleted once the ciphertext is re-read and matches its record'
complete -c pgb-encrypt -l json -d 'Write pgb.v1 records (JSON lines) even when stdout is a terminal. Without it a terminal gets one short line per record (sizes in binary units, times as ages, the outcome); a pipe or a file always gets the records'
complete -c pgb-encrypt -l help -d 'Print help'
complete -c pgb-encrypt -s V -l version -d 'Print version'
