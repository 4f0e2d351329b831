build-san/src/eval.o: src/eval.c src/eval.h comm/comm.h datasets/loader.h \
 datasets/dataset.h src/model.h src/config.h kernels/kernels.h
src/eval.h:
comm/comm.h:
datasets/loader.h:
datasets/dataset.h:
src/model.h:
src/config.h:
kernels/kernels.h:
