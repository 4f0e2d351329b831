// fixture.h: reading the PyTorch oracles' HDF5 fixtures in the model tests.
// Defines (static, for inclusion by one test file each): read_f64, read_i32,
// attr_i64, rel_err. Include after cmocka.h.
#ifndef ELASTIC_TESTS_FIXTURE_H
#define ELASTIC_TESTS_FIXTURE_H

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>

#include "kernels.h"

static double* read_f64(hid_t f, const char* name, size_t* n) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    *n = (size_t)H5Sget_simple_extent_npoints(sp);
    double* x = malloc(*n * sizeof *x);
    assert_true(H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Sclose(sp);
    H5Dclose(ds);
    return x;
}

static int32_t* read_i32(hid_t f, const char* name) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    assert_true(ds >= 0);
    hid_t sp = H5Dget_space(ds);
    size_t n = (size_t)H5Sget_simple_extent_npoints(sp);
    int32_t* x = malloc(n * sizeof *x);
    assert_true(H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    H5Sclose(sp);
    H5Dclose(ds);
    return x;
}

static int64_t attr_i64(hid_t f, const char* name) {
    int64_t v = 0;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    assert_true(a >= 0);
    assert_true(H5Aread(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    return v;
}

// max |a-b| / (atol + max|b|) over the tensor: relative to the tensor's scale
static double rel_err(const real* a, const double* b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs(b[i]));
    }
    return md / (1e-6 + mb);
}

#endif
