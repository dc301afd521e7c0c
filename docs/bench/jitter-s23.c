// jitter2 SECONDS: 1 ms sleeps; per wall-clock second: max lateness, wake-ups late by >5 and >20 ms
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double mono(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static double wall(void){struct timespec t;clock_gettime(CLOCK_REALTIME,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int c,char**v){double dur=atof(v[1]);double end=mono()+dur;struct timespec d={0,1000000};
long sec=(long)wall();double mx=0;int o5=0,o20=0,n=0;
while(mono()<end){double t=mono();nanosleep(&d,0);double l=(mono()-t-0.001)*1000;long s=(long)wall();
 if(s!=sec){printf("%ld %.1f %d %d %d\n",sec,mx,o5,o20,n);fflush(stdout);sec=s;mx=0;o5=o20=n=0;}
 if(l>mx)mx=l;if(l>5)o5++;if(l>20)o20++;n++;}
return 0;}
