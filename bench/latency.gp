# Latency against throughput of the intake runs of `make bench`.
#   gnuplot -e "datafile='x.dat'; outfile='x.png'; subtitle='...'" bench/latency.gp
# datafile, written by scripts/bench, holds two blocks separated by two blank
# lines (gnuplot's "index"): 0 = the service (wrk), 1 = pgbench on the same
# statement. Columns: throughput/s, p50 ms, p99 ms, label.
if (!exists("subtitle")) subtitle = ""

set terminal pngcairo size 1000,650 font "sans,10" noenhanced
set output outfile
set title "POST /orders: latency against throughput (medians of the runs)\n".subtitle
set xlabel "orders committed per second"
set ylabel "latency (ms, log scale)"
set logscale y
set grid xtics ytics mytics
set key outside bottom center horizontal
set bmargin 6
set xrange [0:*]
set offsets 0, graph 0.08, 0, 0

plot datafile index 0 using 1:2 with linespoints lw 2 pt 7 lc rgb "#1f77b4" title "service p50 (wrk)", \
     ''       index 0 using 1:3 with linespoints lw 2 pt 5 lc rgb "#1f77b4" dt 2 title "service p99 (wrk)", \
     ''       index 0 using 1:3:4 with labels offset 0,1 notitle, \
     ''       index 1 using 1:2 with linespoints lw 2 pt 7 lc rgb "#d62728" title "pgbench p50 (same SQL)", \
     ''       index 1 using 1:3 with linespoints lw 2 pt 5 lc rgb "#d62728" dt 2 title "pgbench p99 (same SQL)", \
     ''       index 1 using 1:3:4 with labels offset 0,1 notitle
