cd /work/main
for spec in "base 24,24,24,24,32,32,32,32" "c1 16,16,24,24,32,32,32,32" "c2 16,16,16,16,24,24,32,32,32" "c3 16,16,16,24,24,24,32,32"; do
  set -- $spec
  .venv/bin/python /work/jobs/explore_res.py $1 $2 > /work/jobs/res/$1.log 2>&1
done
echo done
