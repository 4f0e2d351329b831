build-san/src/model.o: src/model.c src/model.h src/config.h \
 kernels/kernels.h src/models/sasrec.h src/model.h
src/model.h:
src/config.h:
kernels/kernels.h:
src/models/sasrec.h:
src/model.h:
