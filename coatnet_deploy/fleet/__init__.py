"""Beyond one machine: the matrix, the device proof and TensorRT builds on a Ray cluster.

    cells.py       FleetCell; build_cell and prove_bundles, the two functions a cell's work is (in process or as Ray tasks)
    nodes.py       what a node offers (Ray custom resources and labels) and what a cell asks for (Placement)
    schedulers.py  SerialScheduler (this process) and RayScheduler (Ray is imported there only)
    matrix.py      run_fleet: the driver, FleetRow / FleetResult, matrix.json / .md / .html with "ran on"
    transport.py   bundles as tar bytes through the object store, checked on arrival
    emulation.py   emulated CPUs (QEMU user-mode): the one runner for worker --emulate and the device check
    probe.py       the device side in a child process: parity, predict, INT8 census, b1/b8 timing
    worker.py      `coatnet-deploy worker`: join a cluster as a node that says what it is
"""
