build-san/src/train.o: src/train.c src/train.h comm/comm.h src/config.h \
 src/ckpt.h src/model.h kernels/kernels.h src/eval.h datasets/loader.h \
 datasets/dataset.h src/util.h
src/train.h:
comm/comm.h:
src/config.h:
src/ckpt.h:
src/model.h:
kernels/kernels.h:
src/eval.h:
datasets/loader.h:
datasets/dataset.h:
src/util.h:
