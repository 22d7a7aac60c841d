"""Files in and out: ``dump`` (the candidate-dump reader and its checks), ``outputs`` (the atomic
writer and the guards on output paths), ``cache`` (the cache folder), ``sample`` (the bundled sample
dump), ``console`` (the rich consoles on stdout/stderr)."""
