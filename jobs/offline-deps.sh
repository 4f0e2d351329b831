#!/usr/bin/env bash
# The build and run dependencies for a GPU node without a package manager or
# network (../shared/GPU.md): Open MPI, HDF5, OpenBLAS (its OpenMP build) and
# cmocka as Debian packages, fetched on a networked Debian machine, carried
# with the project, unpacked under a prefix on the node (never into /).
#   jobs/offline-deps.sh fetch [DIR]            on a networked Debian machine: the .debs into DIR (default .debs),
#                                               and h5py wheels (the PyTorch peer reads the data with it) into .whl
#   jobs/offline-deps.sh unpack PREFIX [DIR]    on the node: every .deb of DIR unpacked under PREFIX
#   eval "$(jobs/offline-deps.sh env PREFIX)"   the variables that make the programs and mpirun run from PREFIX
# then build with `make DEP=PREFIX` (jobs/gpu_check.sh does all of it).
set -euo pipefail
cd "$(dirname "$0")/.."
# What the programs, mpirun and the tests load, as `ldd bin/elastic_train` and
# mpirun's plugins report on Debian 12 (add what ldd says is missing).
PKGS="openmpi-bin openmpi-common libopenmpi3 libopenmpi-dev libhwloc15 libpmix2
libevent-core-2.1-7 libevent-pthreads-2.1-7 libfabric1 libucx0 libpsm2-2 libpsm-infinipath1
libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200 libmunge2 libxnvctrl0 libnuma1
libhdf5-103-1 libhdf5-dev libsz2 libaec0 libcurl3-gnutls libnghttp2-14 librtmp1 libssh2-1
libpsl5 libldap-2.5-0 libsasl2-2 libbrotli1
libopenblas0 libopenblas0-openmp libopenblas-dev libopenblas-openmp-dev libgfortran5
libcmocka0 libcmocka-dev"
# What those load in turn and a bare node may lack (libcurl's and GnuTLS's
# needs): unpacked only where the node has no library of that name, so the
# node's own newer ones (which its Python also loads) are never shadowed.
FALLBACK="libcurl4 libunistring2 libidn2-0 libgnutls30 libhogweed6 libnettle8 libgmp10
libp11-kit0 libtasn1-6 libffi8 libssl3 libzstd1 libudev1 libquadmath0 libgssapi-krb5-2
libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2"
ml=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
case ${1:-} in
fetch)
    dir=${2:-.debs}
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    (cd "$dir" && apt-get download $PKGS $FALLBACK 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    n=$(ls "$dir"/*.deb 2>/dev/null | wc -l)
    echo "offline-deps: $n packages in $dir ($(du -sh "$dir" | cut -f1))"
    [ "$n" -ge 30 ] || { echo "offline-deps: some packages were not fetched" >&2; exit 1; }
    # h5py for the Python versions a GPU node's PyTorch may run on
    for py in 3.10 3.11 3.12 3.13; do
        python3 -m pip download --quiet --only-binary=:all: --python-version "$py" \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --no-deps -d .whl h5py \
            2>/dev/null || echo "offline-deps: no h5py wheel for Python $py"
    done
    echo "offline-deps: $(ls .whl/*.whl 2>/dev/null | wc -l) wheels in .whl ($(du -sh .whl 2>/dev/null | cut -f1))"
    ;;
unpack)
    prefix=${2:?usage: offline-deps.sh unpack PREFIX [DIR]}
    dir=${3:-.debs}
    case $(realpath -m "$prefix") in /) echo "offline-deps: never unpack into /" >&2; exit 2 ;; esac
    ls "$dir"/*.deb >/dev/null 2>&1 || { echo "offline-deps: no .deb in $dir (run fetch on a networked machine)" >&2; exit 1; }
    mkdir -p "$prefix"
    prefix=$(realpath "$prefix")
    lib="$prefix/usr/lib/$ml"
    fb=$(mktemp -d)
    for f in "$dir"/*.deb; do
        to=$prefix
        for p in $FALLBACK; do [[ $(basename "$f") == "${p}_"* ]] && to=$fb; done
        if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$f" "$to"
        else  # a node without dpkg: a .deb is an ar archive holding data.tar.*
            deb=$(realpath "$f") t=$(mktemp -d)
            (cd "$t" && ar x "$deb" && tar -xf data.tar.* -C "$to"); rm -rf "$t"
        fi
    done
    mkdir -p "$lib"
    have=$( (ldconfig -p || /sbin/ldconfig -p) 2>/dev/null | awk '{print $1}')
    for so in "$fb"/usr/lib/"$ml"/*.so.* "$fb"/lib/"$ml"/*.so.*; do
        [ -e "$so" ] || continue
        name=$(basename "$so")
        grep -qxF "$name" <<< "$have" || cp -a "$so" "$lib/"
    done
    rm -rf "$fb"
    # Debian's alternatives are absent: the libraries' generic names
    [ -e "$lib/libopenblas.so.0" ] || ln -sf openblas-openmp/libopenblas.so.0 "$lib/libopenblas.so.0"
    [ -e "$lib/libblas.so.3" ] || ln -sf openblas-openmp/libblas.so.3 "$lib/libblas.so.3"
    [ -e "$prefix/usr/bin/mpirun" ] || ln -sf orterun "$prefix/usr/bin/mpirun"
    echo "offline-deps: unpacked $(ls "$dir"/*.deb | wc -l) packages under $prefix"
    ;;
env)
    prefix=$(realpath "${2:?usage: offline-deps.sh env PREFIX}")
    lib="$prefix/usr/lib/$ml"
    echo "export LD_LIBRARY_PATH=$lib:$lib/hdf5/serial:$lib/openblas-openmp:$lib/openmpi/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
    echo "export PATH=$prefix/usr/bin:\$PATH"
    # Open MPI's install folders, as Debian lays them out (ompi_info --path all)
    echo "export OPAL_PREFIX=$prefix/usr OPAL_EXEC_PREFIX=$prefix/usr OPAL_BINDIR=$prefix/usr/bin"
    echo "export OPAL_LIBDIR=$lib/openmpi/lib OPAL_PKGLIBDIR=$lib/openmpi/lib/openmpi3"
    echo "export OPAL_DATADIR=$prefix/usr/share OPAL_PKGDATADIR=$prefix/usr/share/openmpi"
    echo "export OPAL_SYSCONFDIR=$prefix/etc/openmpi OPAL_INCLUDEDIR=$lib/openmpi/include"
    # and PMIx's plugins
    echo "export PMIX_MCA_mca_base_component_path=$lib/pmix2/lib/pmix"
    ;;
*)
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
