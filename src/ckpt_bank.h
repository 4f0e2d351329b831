// ckpt_bank.h: the memory bank's shards in a checkpoint, read and written at
// any rank count (DESIGN §5). A checkpoint written by P ranks holds
// bank-QQQQQ-of-PPPPP.h5 for q < P: the global rows i with i mod P = q in
// ascending order (local row j is row q + P j), as datasets ids [n] (int64),
// values, adam_m, adam_v [n, d] (float, chunked, HDF5's Fletcher32 checksum on
// each chunk) and attributes rows, d, rank, world, step.
//
// Rank r of M holds the rows i mod M = r. By the Chinese remainder theorem
// the shards holding some of them are the q with q = r mod gcd(P, M), and in
// shard q they are one strided run (stride lcm(P, M) / P) that lands strided
// (stride lcm / M) among rank r's rows: one hyperslab read per shard and
// array, whatever P and M. So a trainer resumes at any rank count reading only
// its own rows, and the offline tools reshard in bounded blocks.
// Defines: ckpt_shard_name, ckpt_bank_read, ckpt_shard_writer, ckpt_shard_create,
// ckpt_shard_write, ckpt_shard_close, ckpt_shard_check, ckpt_shards_holding.
#ifndef ELASTIC_CKPT_BANK_H
#define ELASTIC_CKPT_BANK_H

#include <hdf5.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

// The file name of rank q's shard of P into out[n].
void ckpt_shard_name(char* out, size_t n, int q, int P);

// 1 when shard q of P holds some of rank r of M's rows.
int ckpt_shards_holding(int q, int P, int r, int M);

// Rows [first, first + count) of rank r of M's share (local row a is global
// row r + M a) into values, m, v [count, d] (host memory; m and v may be
// NULL), from the shards in folder dir of a checkpoint written by P ranks at
// `step`, of a bank of `rows` x d. Every shard read has its attributes and the
// ids of the rows read checked. 0, or -1 with err[512] naming the file.
int ckpt_bank_read(const char* dir, int P, int64_t rows, int d, int64_t step, int r, int M,
                   int64_t first, int64_t count, real* values, real* m, real* v, char* err);

// A shard written in blocks of rows.
typedef struct {
    hid_t f, ids, arr[3];
    char path[4096];
    int64_t n;  // rows of the shard
    int d, rank, world;
} ckpt_shard_writer;

// Creates shard `rank` of `world` of a bank of rows x d at step in file.
int ckpt_shard_create(ckpt_shard_writer* w, const char* file, int64_t rows, int d, int rank,
                      int world, int64_t step, char* err);
// Local rows [first, first + count) (host memory [count, d]; the ids follow).
int ckpt_shard_write(ckpt_shard_writer* w, int64_t first, int64_t count, const real* values,
                     const real* m, const real* v, char* err);
// Closes it, checked (a full disk shows here); after an error too (then the
// file is incomplete and the caller removes it).
int ckpt_shard_close(ckpt_shard_writer* w, char* err);

// Shard q of P of a bank of rows x d at step, whole: attributes, ids exactly
// q + P j, every chunk of every array read (so HDF5 checks its checksum), in
// blocks of rows. 0, or -1 with err naming the file and what is wrong.
int ckpt_shard_check(const char* file, int P, int q, int64_t rows, int d, int64_t step, char* err);

#endif
