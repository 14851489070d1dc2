out=/work/jobs/ho_final2
for i in 1 2 3; do
  for side in base final; do
    d=/work/wt-base; [ $side = final ] && d=/work/main
    cd $d && PYTHONPATH=$d /work/main/.venv/bin/python benchmarks/host_overhead.py --recipes speed94 quick --repeats 5 --out $out/${side}_$i.json > $out/${side}_$i.txt 2>&1
  done
done
