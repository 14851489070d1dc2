set -e
out=/work/jobs/ho_ab; mkdir -p $out
for i in 1 2 3; do
  for side in base new; do
    d=/work/wt-base; [ $side = new ] && d=/work/snap
    cd $d && PYTHONPATH=$d /work/main/.venv/bin/python benchmarks/host_overhead.py --recipes speed94 quick --repeats 5 --out $out/${side}_$i.json > $out/${side}_$i.txt 2>&1
  done
done
echo done
# then, from /work/main at b7e20e4 (the new StopOnNaN), three more runs written as again_1..3.json:
# for i in 1 2 3; do python benchmarks/host_overhead.py --recipes speed94 quick --repeats 5 --out again_$i.json; done
