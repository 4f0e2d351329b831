build-san/src/models/sasrec.o: src/models/sasrec.c src/models/sasrec.h \
 src/model.h src/config.h kernels/kernels.h src/models/init.h
src/models/sasrec.h:
src/model.h:
src/config.h:
kernels/kernels.h:
src/models/init.h:
