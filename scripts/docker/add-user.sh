#!/usr/bin/env bash
# The images' non-root user: uid/gid 65532 "whisperop", home /tmp.
#   usage: add-user.sh            (ROOT=/some/dir: edit ROOT/etc/… instead, for tests)
# Why an /etc/passwd entry although the pods run by number (runAsUser):
# getpass.getuser() (kopf's peering identity, and anything else asking "who
# am I") raises KeyError for a uid with no entry, which crash-looped the
# operator. The home is /tmp because the root filesystem is read-only in the
# pods and /tmp is their writable emptyDir.
set -euo pipefail
uid=65532 name=whisperop
etc="${ROOT:-}/etc"
if ! grep -q "^[^:]*:[^:]*:$uid:" "$etc/group"; then
  echo "$name:x:$uid:" >> "$etc/group"
fi
if ! grep -q "^[^:]*:[^:]*:$uid:" "$etc/passwd"; then
  echo "$name:x:$uid:$uid:whisper-operator:/tmp:/usr/sbin/nologin" >> "$etc/passwd"
fi
grep "^[^:]*:[^:]*:$uid:" "$etc/passwd"
