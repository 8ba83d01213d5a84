#!/usr/bin/env bash
# bench/peak_memory.sh LOG -- command...: run the command (its output to LOG) and print its main process's peak VmRSS, RssAnon and RssFile in MB, sampled from /proc every 0.2 s (the anonymous part is what the run allocates; the file-backed part is pages of memory-mapped files, e.g. datasets' Arrow cache).
log=$1; shift
"$@" > "$log" 2>&1 &
pid=$!
peak_rss=0; peak_anon=0; peak_file=0
while kill -0 $pid 2>/dev/null; do
  read rss anon file < <(awk '/^VmRSS/{r=$2}/^RssAnon/{a=$2}/^RssFile/{f=$2}END{print int(r/1024), int(a/1024), int(f/1024)}' /proc/$pid/status 2>/dev/null)
  [ -n "$rss" ] && { [ $rss -gt $peak_rss ] && peak_rss=$rss; [ $anon -gt $peak_anon ] && peak_anon=$anon; [ $file -gt $peak_file ] && peak_file=$file; }
  sleep 0.2
done
wait $pid; rc=$?
echo "exit $rc; main process peaks (MB): VmRSS $peak_rss, RssAnon $peak_anon, RssFile $peak_file" | tee -a "$log"
