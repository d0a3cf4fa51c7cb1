# Sourced by the benchmarks that start a throwaway PostgreSQL server: where
# its data directory goes.
#
# Why: this VM's root filesystem is ext4 without a journal. In that mode ext4
# does not reuse an inode within 60 s of its deletion (360 s while the inode
# table block is dirty), so every file it creates first skips past the
# recently deleted ones. A benchmark that drops and recreates a database of
# 200-1000 tables before every timed run deletes thousands of files a minute,
# and the server's file creation slows down run after run: the floor of 200
# migrations took 1.2-1.6 s in such a run, 0.5-0.7 s on a journaled ext4 with
# the same runs back to back, and perf showed the server's top kernel symbols
# to be find_inode_bit, recently_deleted and find_get_block_common. Database
# servers run on journaled filesystems, so the benchmarks give the cluster one:
# an ext4 image with its journal, loop-mounted for the run (as root, when the
# scratch filesystem has no journal; elsewhere the cluster goes to /tmp).
#
#   pg_data_fs_setup NAME   sets PG_DATA_PARENT (a directory the postgres OS
#                           user can reach) and PG_DATA_FS (how to describe it)
#   pg_data_fs_cleanup      unmounts and removes the image (safe to call twice)

PG_DATA_PARENT=/tmp
PG_DATA_FS=""
PG_DATA_MOUNT=""
PG_DATA_IMAGE=""

# True when DIR is on an ext4 filesystem that runs without a journal.
pg_data_fs_unjournaled() {
  local src dev
  src=$(findmnt -n -o SOURCE -T "$1" 2>/dev/null) || return 1
  [[ $(findmnt -n -o FSTYPE -T "$1" 2>/dev/null) == ext4 ]] || return 1
  dev=$(basename -- "$(readlink -f -- "$src")")
  [[ -r /sys/fs/ext4/$dev/journal_task ]] || return 1
  [[ $(cat "/sys/fs/ext4/$dev/journal_task") == "<none>" ]]
}

pg_data_fs_setup() {
  local name=$1
  PG_DATA_FS="$(findmnt -n -o FSTYPE -T /tmp 2>/dev/null || echo '?') (/tmp)"
  pg_data_fs_unjournaled /tmp || return 0
  local unmounted="$PG_DATA_FS: ext4 without a journal, so the server's timings suffer from its inode reuse rule (bench/pg_data_fs.sh)"
  if [[ $(id -u) -ne 0 ]] || ! command -v mkfs.ext4 >/dev/null; then
    PG_DATA_FS="$unmounted; a journaled image needs root and mkfs.ext4"
    return 0
  fi
  PG_DATA_IMAGE=$(mktemp "/var/tmp/$name-pgdata.XXXXXX.img")
  PG_DATA_MOUNT=$(mktemp -d "/mnt/$name-pgdata.XXXXXX")
  if truncate -s 8G "$PG_DATA_IMAGE" && mkfs.ext4 -q -F "$PG_DATA_IMAGE" &&
    mount -o loop "$PG_DATA_IMAGE" "$PG_DATA_MOUNT"; then
    chmod 755 "$PG_DATA_MOUNT"
    PG_DATA_PARENT=$PG_DATA_MOUNT
    PG_DATA_FS="journaled ext4 on a loop-mounted image (the scratch filesystem, /tmp, is ext4 without a journal: bench/pg_data_fs.sh says why that matters)"
  else
    pg_data_fs_cleanup
    PG_DATA_FS="$unmounted; the journaled loop image could not be mounted"
  fi
}

pg_data_fs_cleanup() {
  if [[ -n $PG_DATA_MOUNT ]]; then
    umount -- "$PG_DATA_MOUNT" 2>/dev/null || umount -l -- "$PG_DATA_MOUNT" 2>/dev/null || true
    rmdir -- "$PG_DATA_MOUNT" 2>/dev/null || true
    PG_DATA_MOUNT=""
  fi
  if [[ -n $PG_DATA_IMAGE ]]; then
    rm -f -- "$PG_DATA_IMAGE"
    PG_DATA_IMAGE=""
  fi
}
