// stream.h: elastic_eval --stream, users' states carried event by event
// (ELASTIC and RecGRELA: the model's stream_step, O(1) an event). Defines:
// stream_events.
#ifndef ELASTIC_STREAM_H
#define ELASTIC_STREAM_H

#include <stdio.h>

#include "dataset.h"
#include "model.h"

// Reads `user item` lines (original ids, space-, tab- or comma-separated, in
// time order) from events; a user of ds is first brought up to date with its
// whole history in ds (once), a user not in ds starts with none, a user in
// the states file (when states is given and exists) starts from its saved
// state instead. After each event, with k > 0, writes the user's k best items
// as lines "event,user,rank,item,score" to out. With states, every user's
// state is saved there at the end (under a temporary name, then renamed).
// m is a model with a streamed state (any L and batch: its row 0 is the
// scratch). 0, or -1
// with err[512] naming the file and line.
int stream_events(model* m, ds_file* ds, const char* events, const char* states, int k, FILE* out,
                  char* err);

#endif
